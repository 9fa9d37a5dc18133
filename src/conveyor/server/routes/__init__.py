"""The API's routers, one module per resource; all are mounted under /v1."""
