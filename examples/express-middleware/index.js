// A whole Express router as one function. Express is this project's own dependency, bundled like any
// other npm package (run `npm ci` here first). The runtime parses the body (JSON, form, text or raw,
// bounded by maxBodyBytes) when req.body is read, so the router needs no body parser of its own.
const express = require("express");

const router = express.Router();
const notes = [];

// Middleware: every route below needs `authorization: Bearer demo`.
router.use((req, res, next) => {
  if (req.get("authorization") !== "Bearer demo") {
    res.status(401).json({ error: "missing or wrong bearer token" });
    return;
  }
  next();
});

router.get("/notes", (req, res) => {
  res.json({ notes });
});

router.post("/notes", (req, res) => {
  if (typeof req.body?.text !== "string") {
    res.status(400).json({ error: "body must be JSON {\"text\": string}" });
    return;
  }
  const note = { id: notes.length + 1, text: req.body.text };
  notes.push(note);
  res.status(201).set("location", `/notes/${note.id}`).json(note);
});

router.get("/notes/:id", (req, res) => {
  const note = notes.find((n) => n.id === Number(req.params.id));
  if (!note) res.status(404).json({ error: "no such note" });
  else res.json(note);
});

module.exports.notes = { func: router, config: { timeout: 5_000, maxBodyBytes: 64 * 1024 } };
