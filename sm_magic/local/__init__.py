"""A local SageMaker endpoint: the real runtime wire protocol in front of a small model.

Start one with ``sm-magic serve`` or in-process with :class:`LocalEndpoint`.
"""

from sm_magic.local.config import EndpointSpec, ServerConfig
from sm_magic.local.faults import Fault
from sm_magic.local.server import LocalEndpoint

__all__ = ["EndpointSpec", "Fault", "LocalEndpoint", "ServerConfig"]
