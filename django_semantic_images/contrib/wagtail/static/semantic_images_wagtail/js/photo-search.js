// Search the Images listing by photo: dropping a picture on the upload (or choosing one) sends it.
// The form posts to the listing's address as it is when sent: Wagtail refreshes the results and the
// address (not this form) when a filter or the sort order changes, and the photo search keeps them.
document.addEventListener("DOMContentLoaded", () => {
  const resetParams = ["photo", "q", "p"]; // as photo_search.RESET_VARS
  for (const form of document.querySelectorAll("[data-semantic-photo-search]")) {
    const input = form.querySelector('input[type="file"]');
    if (!input) continue;
    const zone = form.querySelector("[data-semantic-photo-drop]") || form;
    const send = () => input.files.length && form.requestSubmit();
    form.addEventListener("submit", () => {
      const action = new URL(form.action, window.location.href);
      const params = new URLSearchParams(window.location.search);
      for (const name of resetParams) params.delete(name);
      action.search = params.toString();
      form.action = action.toString();
    });
    input.addEventListener("change", send);
    zone.addEventListener("dragover", (event) => {
      event.preventDefault();
      zone.classList.add("w-bg-surface-field-hover");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("w-bg-surface-field-hover"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("w-bg-surface-field-hover");
      if (!event.dataTransfer.files.length) return;
      input.files = event.dataTransfer.files;
      send();
    });
  }
});
