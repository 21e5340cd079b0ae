"""Chat: message requests (send, edit, react, typing, read state, history, threads),
communities with their channels and members, and the group-commit message writer.
"""
