"""The JSON API under /api/v1: everything a page does is one of these calls, so scripts can do what
people do. Documented by the OpenAPI schema at /api/v1/openapi.json."""
