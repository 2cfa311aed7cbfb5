"use strict";
// Label suggestions on the change form: a click adds the label to the target field
// (alt text by default) in the browser only; nothing is saved until the editor saves.
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
  field.value = current ? current + ", " + text : text;
  field.dispatchEvent(new Event("input", { bubbles: true }));
  field.dispatchEvent(new Event("change", { bubbles: true }));
  field.focus();
});
