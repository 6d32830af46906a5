"""The engine service: settings, the HTTP app, jobs, the fair queue and the device workers."""
