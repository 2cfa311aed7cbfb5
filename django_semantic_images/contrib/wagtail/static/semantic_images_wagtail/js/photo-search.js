// Search the Images listing by photo: dropping a picture on the upload (or choosing one) sends it.
document.addEventListener("DOMContentLoaded", () => {
  for (const form of document.querySelectorAll("[data-semantic-photo-search]")) {
    const input = form.querySelector('input[type="file"]');
    const zone = form.querySelector("[data-semantic-photo-drop]") || form;
    const send = () => input.files.length && form.requestSubmit();
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
