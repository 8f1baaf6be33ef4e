"""Who may call what: bearer JWTs verified against an issuer's keys, scopes, user-bound tokens, rate limits.

`server.interceptors.auth` applies it to every call; nothing here imports grpc.
"""
