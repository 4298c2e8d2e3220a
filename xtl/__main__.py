import sys

from xtl.cli import main

sys.exit(main())
