"""The HTTP face: the Starlette app, its routes, the frame stream, problem+json and OpenAPI."""
