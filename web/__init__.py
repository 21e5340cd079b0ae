"""The web client's static pages (index, voice rooms, moderator console): plain HTML, CSS
and JavaScript speaking the public protocol, no build step. A package only so that an
installed Hearth carries the files as package data; ``server/app.py`` serves them."""
