print("api-server")
