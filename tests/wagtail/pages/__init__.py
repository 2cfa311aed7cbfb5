"""A page type with an image field, so that the browser tests meet the image chooser in the page
editor (the test settings have no other page model)."""
