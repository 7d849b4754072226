"""The plugin face: what provider plugins import (hookspecs, Provider, model specs, request/result types, errors)."""
