"""``python -m captum_sscam.evaluate``: forwards to ``captum_sscam.apps.evaluate``."""

from captum_sscam.apps.evaluate import main

if __name__ == "__main__":
    main()
