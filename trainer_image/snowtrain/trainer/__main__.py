"""``python -m snowtrain.trainer --config FILE``: one process per visible GPU (launch.py),
each running main.py."""

import sys

from .launch import main

sys.exit(main())
