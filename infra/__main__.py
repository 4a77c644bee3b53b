"""Entry point of `pulumi up` (Pulumi.yaml: `main: infra/`)."""

import sys
from pathlib import Path

# Pulumi runs this file by path; make the project root importable so `infra` resolves as a package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.program import main

main()
