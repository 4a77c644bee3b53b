"""The `cell` CLI: stand up a local cell, onboard students, apply experiences, grade."""
