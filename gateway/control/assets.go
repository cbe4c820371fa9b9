package control

import (
	"embed"
	"io/fs"
	"mime"
	"path"
	"strings"

	"github.com/valyala/fasthttp"
)

// console holds the web console: plain HTML, CSS and JavaScript written
// by hand, and uPlot's built file vendored from npm (console/VENDOR.md
// records its version and checksum; a test checks them). No build step:
// `make run` serves these files as they are.
//
//go:embed console
var console embed.FS

// assets are the console's files by URL path, read once.
type assets map[string]asset

type asset struct {
	body        []byte
	contentType string
}

func loadAssets() (assets, error) {
	a := assets{}
	err := fs.WalkDir(console, "console", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		ext := path.Ext(p)
		if ext != ".html" && ext != ".js" && ext != ".css" && ext != ".png" {
			return nil // notes and licences are not served
		}
		b, err := console.ReadFile(p)
		if err != nil {
			return err
		}
		ct := mime.TypeByExtension(ext)
		if ext == ".js" {
			ct = "text/javascript; charset=utf-8"
		}
		a["/"+strings.TrimPrefix(p, "console/")] = asset{b, ct}
		return nil
	})
	return a, err
}

// serveAsset answers the console's files; "/" is its page. Every page of
// the console is that one page: it routes in the browser (the part after
// #), so no URL ever carries a secret to the server.
func (s *Server) serveAsset(rc *fasthttp.RequestCtx, p string) error {
	if !rc.IsGet() && !rc.IsHead() {
		return errMethodNotAllowed
	}
	if p == "/" {
		p = "/index.html"
	}
	a, ok := s.assets[p]
	if !ok {
		return errNotFound
	}
	rc.SetContentType(a.contentType)
	rc.SetBody(a.body)
	return nil
}
