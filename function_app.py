"""Viva Learning Sync: the Functions app only registers the blueprints of ``handlers/``."""

import azure.functions as func

from handlers import admin, health, intake, maintenance, reconcile, worker

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(intake.bp)
app.register_functions(worker.bp)
app.register_functions(health.bp)
app.register_functions(admin.bp)
app.register_functions(maintenance.bp)
app.register_functions(reconcile.bp)
