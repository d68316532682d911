"""Runnable examples of aioq with FastAPI, aiohttp and a plain asyncio script.

``tasks.py`` holds the tasks the web examples share; run every command from the repository
root so that ``examples`` is importable.
"""
