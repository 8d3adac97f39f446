import sys

from metarecipe.cli.main import main

sys.exit(main())
