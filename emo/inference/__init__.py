"""The serving wing: doors onto ``EmotionRecognizer.predict`` (today: the HTTP server, ``serve``)."""
