"""envd's wire facts, shared by envd, the node agent, the proxy and the template builds."""

ENVD_PORT = 49983
# The E2B envd version this one matches: the SDKs gate features on it, and everything they
# gate on at this version is implemented (see their versions.py).
ENVD_VERSION = "0.6.4"
