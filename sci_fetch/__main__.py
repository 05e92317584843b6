import sys

from sci_fetch.cli import main

sys.exit(main())
