import sys

from cortex.cli import main

if __name__ == "__main__":
    sys.exit(main())
