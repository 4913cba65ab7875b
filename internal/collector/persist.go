package collector

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// loadTemplates reads Config.TemplatesFile into the decoder, so data sets
// decode from the first datagram after a restart. A missing file is a
// first start; an unreadable or corrupt one is logged and ignored (the
// exporters resend their templates within minutes).
func (c *Collector) loadTemplates() {
	path := c.cfg.TemplatesFile
	if path == "" {
		return
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err == nil {
		err = c.dec.LoadTemplates(data)
	}
	if err != nil {
		c.log.Warn("ignoring the saved flow templates: data sets wait for each exporter's next template; "+
			"the file is rewritten at the next save", "file", path, "err", err)
		return
	}
	c.saved = data
	c.log.Info("loaded saved flow templates", "file", path)
}

// saveLoop writes the templates every saveEvery when they changed, until
// done is closed.
func (c *Collector) saveLoop(done <-chan struct{}) {
	t := time.NewTicker(saveEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			c.saveTemplates()
		case <-done:
			return
		}
	}
}

// saveTemplates writes the decoder's templates and learned sampling rates
// to Config.TemplatesFile if they changed since the last save. The file is
// replaced atomically (a temporary file renamed over it), so a crash
// leaves the old or the new file, never half of one.
func (c *Collector) saveTemplates() {
	path := c.cfg.TemplatesFile
	if path == "" {
		return
	}
	c.saveMu.Lock()
	defer c.saveMu.Unlock()
	data := c.dec.Templates()
	if bytes.Equal(data, c.saved) {
		return
	}
	if err := writeFileAtomic(path, data); err != nil {
		c.log.Error("saving flow templates failed: after a restart, data sets wait for each exporter's next template; "+
			"check that the folder exists and is writable", "file", path, "err", err)
		return
	}
	c.saved = data
}

func writeFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", f.Name(), err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", f.Name(), err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return err
	}
	// Make the rename itself durable.
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
