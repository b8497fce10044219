"""Score-CAM and Smoothed Score-CAM (SS-CAM) for Captum.

The library's public names. Everything an application needs (the command line,
the report, the Insights adapter, the dataset evaluation in ``captum_sscam.apps``)
is imported from here, from ``captum_sscam.metrics`` or from
``captum_sscam.visualization``, never from a private module.
"""

from captum_sscam import attr
from captum_sscam.attr import *  # noqa: F403 - the library's public names, listed in attr.__all__

__version__ = "0.1.0"

__all__ = [*attr.__all__, "__version__"]
