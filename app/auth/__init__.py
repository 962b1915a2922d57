"""Bearer tokens: verification (PyJWT, a JWKS) and the roles they carry."""
