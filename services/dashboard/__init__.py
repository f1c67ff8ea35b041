"""The mesh dashboard: actors, pools, engine load and training curves, read from Ray and the run directory."""

from services.dashboard.app import DashboardServer, DashboardSettings, create_app, serve_dashboard

__all__ = ["DashboardServer", "DashboardSettings", "create_app", "serve_dashboard"]
