import uvicorn

from services.gateway.app import create_app
from shared.settings import configure_logging, get_settings

settings = get_settings()
configure_logging("gateway", settings)
uvicorn.run(create_app(settings), host=settings.gateway_host, port=settings.gateway_port,
            log_level="warning", access_log=False)
