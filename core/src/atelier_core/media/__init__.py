"""Media: image decoding and previews, input intake, guarded remote fetch, output storage."""
