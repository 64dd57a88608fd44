//! The glacier tier on object storage: local directory and a real moto S3 server.
