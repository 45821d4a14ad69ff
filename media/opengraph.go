package media

import (
	"bytes"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/html"
	"golang.org/x/net/html/charset"
	"golang.org/x/text/transform"
)

// The Open Graph metadata (https://ogp.me/) of an HTML page, which a URL preview answers
// with (client-server API "Content repository", GET /preview_url: "The OpenGraph data for
// the URL").

const (
	// maxOGTags bounds the properties taken from a page, and maxOGKeyLength and
	// maxOGValueLength each one's name and value: longer ones are left out, except titles and
	// descriptions, which are shortened. NOTSPEC: Synapse's limits (50 tags, names of 50
	// and values of 1000 characters; here bytes).
	maxOGTags        = 50
	maxOGKeyLength   = 50
	maxOGValueLength = 1000
)

// ogPrefixes are the properties taken from <meta property="…" content="…">: Open Graph's
// own and those of its article and profile types. NOTSPEC: as Synapse.
var ogPrefixes = []string{"og:", "article:", "profile:"}

// openGraph reads the Open Graph properties of an HTML page, decoded by the charset of its
// Content-Type, byte-order mark or <meta charset> (as browsers determine it, windows-1252
// if none). Where the page has no og:title, og:description or other og: property, it falls
// back on its <title>, <meta name="description"> and Twitter card (twitter:…) tags, as
// Synapse does. Of properties given twice, the first counts, as the Open Graph protocol says.
// The page may be cut short anywhere: what was read is used.
func openGraph(page []byte, contentType string) map[string]string {
	encoding, _, _ := charset.DetermineEncoding(page, contentType)
	tokens := html.NewTokenizer(transform.NewReader(bytes.NewReader(page), encoding.NewDecoder()))
	og := map[string]string{}
	twitter := map[string]string{}
	var title, description string
	inTitle, svgDepth := false, 0
	add := func(into map[string]string, key, value string) {
		if _, seen := into[key]; !seen && len(into) < maxOGTags && len(key) <= maxOGKeyLength && strings.TrimSpace(value) != "" {
			into[key] = value
		}
	}
	for {
		kind := tokens.Next()
		switch kind {
		case html.ErrorToken:
			return finishOpenGraph(og, twitter, title, description)
		case html.StartTagToken, html.SelfClosingTagToken:
			name, hasAttributes := tokens.TagName()
			switch string(name) {
			case "svg":
				if kind == html.StartTagToken {
					svgDepth++
				}
			case "title":
				// An SVG image's <title> names the image, not the page.
				inTitle = kind == html.StartTagToken && svgDepth == 0 && title == ""
			case "meta":
				property, metaName, content := metaAttributes(tokens, hasAttributes)
				switch {
				case hasOGPrefix(property):
					add(og, property, content)
				case hasOGPrefix(metaName):
					// NOTSPEC: pages that put Open Graph in name= are common; Facebook reads them.
					add(og, metaName, content)
				case strings.HasPrefix(metaName, "twitter:"):
					if key, ok := twitterToOpenGraph(metaName); ok {
						add(twitter, key, content)
					}
				case metaName == "description" && description == "":
					description = content
				}
			}
		case html.EndTagToken:
			switch name, _ := tokens.TagName(); string(name) {
			case "svg":
				svgDepth = max(svgDepth-1, 0)
			case "title":
				inTitle = false
			}
		case html.TextToken:
			if inTitle {
				title = string(tokens.Text())
				inTitle = false
			}
		}
	}
}

// metaAttributes reads the property, name and content attributes of a <meta> tag; property
// and name lower-cased.
func metaAttributes(tokens *html.Tokenizer, more bool) (property, name, content string) {
	for more {
		var key, value []byte
		key, value, more = tokens.TagAttr()
		switch string(key) {
		case "property":
			property = strings.ToLower(strings.TrimSpace(string(value)))
		case "name":
			name = strings.ToLower(strings.TrimSpace(string(value)))
		case "content":
			content = string(value)
		}
	}
	return property, name, content
}

func hasOGPrefix(property string) bool {
	for _, prefix := range ogPrefixes {
		if strings.HasPrefix(property, prefix) && len(property) > len(prefix) {
			return true
		}
	}
	return false
}

// twitterToOpenGraph is the Open Graph property a Twitter card property duplicates
// (twitter:title is og:title); the card type and the accounts have none.
func twitterToOpenGraph(name string) (string, bool) {
	switch name {
	case "twitter:card", "twitter:creator", "twitter:site":
		return "", false
	}
	return "og:" + strings.TrimPrefix(name, "twitter:"), true
}

// finishOpenGraph adds the fallbacks to the Open Graph properties read, tidies titles and
// descriptions, and leaves out values too long to answer with.
func finishOpenGraph(og, twitter map[string]string, title, description string) map[string]string {
	for key, value := range twitter {
		if _, seen := og[key]; !seen && len(og) < maxOGTags {
			og[key] = value
		}
	}
	if _, ok := og["og:title"]; !ok && strings.TrimSpace(title) != "" {
		og["og:title"] = title
	}
	if _, ok := og["og:description"]; !ok && strings.TrimSpace(description) != "" {
		og["og:description"] = description
	}
	for key, value := range og {
		switch {
		case key == "og:title" || key == "og:description":
			og[key] = shorten(strings.Join(strings.Fields(value), " "), maxOGValueLength)
		case len(value) > maxOGValueLength:
			delete(og, key)
		}
	}
	return og
}

// shorten cuts text to at most limit bytes, at a character boundary, marking the cut with
// an ellipsis.
func shorten(text string, limit int) string {
	if len(text) <= limit {
		return text
	}
	const ellipsis = "…"
	cut := limit - len(ellipsis)
	for cut > 0 && !utf8.RuneStart(text[cut]) {
		cut--
	}
	return strings.TrimRightFunc(text[:cut], unicode.IsSpace) + ellipsis
}
