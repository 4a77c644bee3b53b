"""Cell's one way to the Kubernetes API, for the adapters (extender, webhook, operator) and `cell`.

- `names`: where Cell's objects live (group, version, plural of every resource it reads) and the
  labels and finalizers it puts on objects, written once.
- `errors`: one error hierarchy for every status the API server answers with.
- `client`: raw JSON over the official client's connection (its credentials, TLS and pool), for the
  hot paths that decode bytes themselves (msgspec) instead of building generated models.
- `dynamic`: generic kinds by apiVersion/kind and server-side apply, through the official client's
  dynamic client (discovery instead of kind-to-path tables).
- `reflector`: list, then watch, with one backoff and one "list again" on 410 Gone; the caller
  hands in what decodes and keeps the objects.

The policy core never imports this package (import-linter contract in pyproject.toml).
"""
