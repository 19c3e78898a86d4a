//! Google Cloud credentials and the one request path every Google API call takes (the Google issue).
