"""Template build file uploads: the header that carries a build's upload token, from the SDK
through the API to the node that builds it."""

UPLOAD_TOKEN_HEADER = "x-corral-upload-token"
