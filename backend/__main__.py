"""`python -m backend ...` is the same as the `shapebridge` command."""

import sys

from backend.cli import main

sys.exit(main())
