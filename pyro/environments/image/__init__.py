"""Container images as environments: layers applied unprivileged, ext4 built without root."""
