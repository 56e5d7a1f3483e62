package cmd

import (
	"io"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// stderrIsTerminal decides --progress auto: a bar only for a person
// watching, never in a backup job's log.
func stderrIsTerminal(s *Streams) bool {
	f, ok := s.Err.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// progressBar adapts progressbar to the copier's callbacks, which may come
// from the onload writer goroutines.
type progressBar struct {
	w   io.Writer
	mu  sync.Mutex
	bar *progressbar.ProgressBar
}

func newProgressBar(w io.Writer) *progressBar { return &progressBar{w: w} }

func (p *progressBar) start(total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bar = progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(p.w),
		progressbar.OptionSetDescription("copying"),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowTotalBytes(true),
		progressbar.OptionShowCount(),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(200*time.Millisecond),
		progressbar.OptionShowElapsedTimeOnFinish(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionFullWidth(),
		progressbar.OptionUseIECUnits(true),
	)
}

func (p *progressBar) add(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		_ = p.bar.Add64(n)
	}
}

func (p *progressBar) clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		_ = p.bar.Clear()
	}
}

// finish completes the bar on success and otherwise leaves it where it
// stopped, on its own line, so the error below it reads cleanly.
func (p *progressBar) finish(ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar == nil {
		return
	}
	if ok {
		_ = p.bar.Finish()
	}
	_, _ = io.WriteString(p.w, "\n")
}
