"""The quota admission webhook (SPEC §3): BandQuota checks at job submission, over HTTPS.

A thin adapter: wire types (wire.py), a list+watch cache of what each namespace is charged
(cache.py), the translation of one AdmissionRequest into calls of scheduler_ext.policy.quota
(admission.py), and the aiohttp routes (server.py).
"""
