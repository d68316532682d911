"""One small project written for Celery (``celery_version.py``) and moved to aioq
(``aioq_version.py``); ``mail.py`` is the mail service both call."""
