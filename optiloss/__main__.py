import sys

from optiloss.cli import main

sys.exit(main())
