import sys

from awcl.cli import main

sys.exit(main())
