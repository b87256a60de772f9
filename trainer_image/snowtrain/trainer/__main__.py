"""``python -m snowtrain.trainer --config FILE`` (see main.py)."""

import sys

from .main import main

sys.exit(main())
