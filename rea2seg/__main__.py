"""``python -m rea2seg`` = the ``rea2seg`` command."""
import sys

from .cli.main import main

sys.exit(main())
