"use strict";
// Show the failure note when the server sent us back here after a wrong token.
if (new URLSearchParams(location.search).has("failed")) {
  document.getElementById("failed").hidden = false;
}
