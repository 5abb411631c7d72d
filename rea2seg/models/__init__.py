"""Models: loading VLMs and SAM (and where they live), recording attention, chat-formatted inputs. The layer below the
stages; it knows nothing of evaluation, serving or the command line."""
