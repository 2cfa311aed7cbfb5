"use strict";
// Label suggestions on the change form: a click adds the label to the target field
// (alt text by default) in the browser only; nothing is saved until the editor saves.
// A label the field already holds (as one of its comma-separated parts) is not added again.
document.addEventListener("click", function (event) {
  const button = event.target.closest("button[data-semantic-suggestion]");
  if (!button) {
    return;
  }
  event.preventDefault();
  const field = document.getElementById(button.dataset.target);
  if (!field) {
    return;
  }
  const text = button.dataset.semanticSuggestion;
  const current = field.value.trim();
  const held = current.split(",").map((part) => part.trim().toLowerCase());
  if (!held.includes(text.trim().toLowerCase())) {
    field.value = current ? current + ", " + text : text;
    field.dispatchEvent(new Event("input", { bubbles: true }));
    field.dispatchEvent(new Event("change", { bubbles: true }));
  }
  // A mouse click shows the field it filled; from the keyboard (Enter or Space: a click of
  // detail 0) focus stays on the suggestion, so the next one is a Tab away.
  if (event.detail !== 0) {
    field.focus();
  }
});
