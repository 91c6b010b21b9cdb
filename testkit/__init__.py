"""The kit that tests/ and bench/ share: clips, configs, a running daemon, jobs and the browser.

It lives in the checkout, not in the installed package: run from the repository's top folder.
"""
