"""Entry point of ``python -m metarec_core``."""
import sys

from metarec_core.cli import main

sys.exit(main())
