"""The HTTP/JSON gateway: REST calls transcoded to the gRPC services, as the contract's `google.api.http`
options declare them (see the README, "HTTP/JSON API").

`routes` reads the options from the descriptors, `transcode` turns an HTTP request into the request message
and the answer into JSON, `errors` maps gRPC statuses to HTTP statuses (details as JSON), `openapi` writes the
OpenAPI document, `app` is the ASGI application and `__main__` serves it with uvicorn.
"""
