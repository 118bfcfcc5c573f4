c.ServerApp.allow_root = True
