package api

import (
	"encoding/base64"
	"strconv"

	"github.com/danielgtaylor/huma/v2"
)

// PageQuery is the cursor pagination every list takes. It is exported
// because huma ignores embedded structs of unexported types: unexported,
// its parameters silently vanished from every list that embedded it.
type PageQuery struct {
	Cursor string `query:"cursor" maxLength:"64" doc:"next_cursor of the previous page; empty: the first page."`
	Limit  int    `query:"limit" minimum:"1" maximum:"10000" default:"1000" doc:"Items per page."`
}

// page cuts one page out of a sorted list. The cursor is opaque to clients
// (today an offset; it may become a key without changing the API).
func page[T any](items []T, q PageQuery) ([]T, string, error) {
	start := 0
	if q.Cursor != "" {
		b, err := base64.RawURLEncoding.DecodeString(q.Cursor)
		n, err2 := strconv.Atoi(string(b))
		if err != nil || err2 != nil || n < 0 {
			return nil, "", huma.Error400BadRequest("cursor: not one this API gave out (use next_cursor of the previous page)")
		}
		start = n
	}
	limit := q.Limit
	if limit <= 0 {
		limit = 1000
	}
	if start >= len(items) {
		return []T{}, "", nil
	}
	end := min(start+limit, len(items))
	next := ""
	if end < len(items) {
		next = base64.RawURLEncoding.EncodeToString([]byte(strconv.Itoa(end)))
	}
	return items[start:end], next, nil
}
