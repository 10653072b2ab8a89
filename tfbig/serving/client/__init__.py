"""Clients for TF Serving's gRPC and REST APIs (tensorflow_model_server or tfbig's own)."""

from tfbig.serving.client.aio import AsyncClient
from tfbig.serving.client.credentials import Credentials
from tfbig.serving.client.sync import Client

__all__ = ["AsyncClient", "Client", "Credentials"]
