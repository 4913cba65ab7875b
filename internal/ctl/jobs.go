package ctl

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/yagura/yagura/internal/api"
)

var jobStatuses = []string{"pending", "delivered", "running", "succeeded", "failed", "expired", "cancelled"}

func finished(j *api.Job) int {
	return j.Counts["succeeded"] + j.Counts["failed"] + j.Counts["expired"] + j.Counts["cancelled"]
}

func countsText(j *api.Job) string {
	var parts []string
	for _, s := range jobStatuses {
		if n := j.Counts[s]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", s, n))
		}
	}
	return strings.Join(parts, ", ")
}

func jobsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "jobs", Short: "Commands for computers: heartbeat-now, collect-logs, uninstall"}
	var computers, paths []string
	var all bool
	var params, expires, desc string
	var maxBytes int64
	var watch bool
	create := &cobra.Command{
		Use:   "create KIND",
		Short: "Create a job for some computers or all",
		Long: `Kinds:
  heartbeat-now   the agent heartbeats at once
  collect-logs    the agent zips the files matching --path and uploads them
  uninstall       the agent removes its identity and queue and stops`,
		Example: `  yagura ctl jobs create heartbeat-now --all
  yagura ctl jobs create collect-logs --computer 0193a5c2-… --path /var/log/syslog --path '/var/log/*.log' --watch
  yagura ctl jobs create uninstall --computer 0193a5c2-…`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			body := api.JobCreate{Kind: args[0], Computers: computers, All: all, ExpiresIn: expires, Description: desc}
			switch {
			case params != "":
				body.Params = json.RawMessage(params)
			case len(paths) > 0:
				b, _ := json.Marshal(map[string]any{"paths": paths, "max_bytes": maxBytes})
				body.Params = b
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			var j api.Job
			if err := g.do(cmd, http.MethodPost, "/api/v1/jobs", nil, body, &j); err != nil {
				return err
			}
			if watch {
				return watchJob(cmd, g, c, j.ID)
			}
			return g.emit(cmd.OutOrStdout(), j, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "Job %s (%s) created for %d computers; follow it with: yagura ctl jobs watch %s\n", j.ID, j.Kind, j.Total, j.ID)
			})
		},
	}
	f := create.Flags()
	f.StringSliceVar(&computers, "computer", nil, "target computer ID (repeat, or comma-separated)")
	f.BoolVar(&all, "all", false, "target every active computer")
	f.StringSliceVar(&paths, "path", nil, "collect-logs: file or glob pattern (repeat)")
	f.Int64Var(&maxBytes, "max-bytes", 50<<20, "collect-logs: total size of the files collected")
	f.StringVar(&params, "params", "", "parameters as JSON (instead of --path)")
	f.StringVar(&expires, "expires", "", "how long the job waits for computers that are away (default 24h)")
	f.StringVar(&desc, "description", "", "what the job is for")
	f.BoolVar(&watch, "watch", false, "follow the job until every target is done")

	var limit int
	ls := &cobra.Command{
		Use: "list", Short: "List jobs, newest first", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out list[api.Job]
			if err := g.do(cmd, http.MethodGet, "/api/v1/jobs", url.Values{"limit": {strconv.Itoa(limit)}}, nil, &out); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), out.Items, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "ID\tKIND\tCREATED\tBY\tDONE\tSTATUS")
				for _, j := range out.Items {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%s\n", j.ID, j.Kind, ts(&j.CreatedAt), dash(j.CreatedBy), finished(&j), j.Total, countsText(&j))
				}
			})
		},
	}
	ls.Flags().IntVar(&limit, "limit", 100, "at most this many")
	show := &cobra.Command{
		Use: "show ID", Short: "Show a job and its targets", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var j api.Job
			if err := g.do(cmd, http.MethodGet, "/api/v1/jobs/"+url.PathEscape(args[0]), nil, nil, &j); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), j, func(tw *tabwriter.Writer) { showJob(tw, &j) })
		},
	}
	watchCmd := &cobra.Command{
		Use: "watch ID", Short: "Follow a job with a progress bar until every target is done", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			return watchJob(cmd, g, c, args[0])
		},
	}
	cancel := &cobra.Command{
		Use: "cancel ID", Short: "Cancel a job", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var j api.Job
			if err := g.do(cmd, http.MethodPost, "/api/v1/jobs/"+url.PathEscape(args[0])+"/cancel", nil, nil, &j); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), j, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "Job %s cancelled: %s\n", j.ID, countsText(&j))
			})
		},
	}
	var out string
	var force bool
	download := &cobra.Command{
		Use: "download FILE-ID", Short: "Download a file a job uploaded (collect-logs) and check its SHA-256", Args: cobra.ExactArgs(1),
		Example: `  yagura ctl jobs show 0193… -o json | jq -r '.targets[].file_id'
  yagura ctl jobs download 5f2c… -O logs.zip`,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			return downloadFile(cmd, c, args[0], out, force)
		},
	}
	download.Flags().StringVarP(&out, "output-file", "O", "", "where to write it (default: yagura-FILE-ID.zip)")
	download.Flags().BoolVar(&force, "force", false, "replace an existing file")
	cmd.AddCommand(create, ls, show, watchCmd, cancel, download)
	return cmd
}

func showJob(tw *tabwriter.Writer, j *api.Job) {
	fmt.Fprintf(tw, "ID\t%s\nKind\t%s\nCreated\t%s by %s\nExpires\t%s\nStatus\t%s\n", j.ID, j.Kind, ts(&j.CreatedAt), dash(j.CreatedBy), ts(&j.ExpiresAt), countsText(j))
	if len(j.Params) > 0 {
		fmt.Fprintf(tw, "Parameters\t%s\n", j.Params)
	}
	fmt.Fprintln(tw, "\nCOMPUTER\tSTATUS\tUPDATED\tFILE\tRESULT")
	for _, t := range j.Targets {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.ComputerID, t.Status, ts(&t.UpdatedAt), dash(t.FileID), dash(string(t.Result)))
	}
}

// watchJob polls a job and draws a progress bar across its targets.
func watchJob(cmd *cobra.Command, g *globals, c *Client, id string) error {
	var bar *progressbar.ProgressBar
	for {
		var j api.Job
		if err := g.do(cmd, http.MethodGet, "/api/v1/jobs/"+url.PathEscape(id), nil, nil, &j); err != nil {
			return err
		}
		if bar == nil {
			bar = progressbar.NewOptions(j.Total, progressbar.OptionSetWriter(cmd.ErrOrStderr()),
				progressbar.OptionSetDescription(j.Kind), progressbar.OptionShowCount(), progressbar.OptionSetPredictTime(false))
		}
		_ = bar.Set(finished(&j))
		bar.Describe(fmt.Sprintf("%s: %s", j.Kind, countsText(&j)))
		if finished(&j) == j.Total {
			_ = bar.Finish()
			fmt.Fprintln(cmd.ErrOrStderr())
			return g.emit(cmd.OutOrStdout(), j, func(tw *tabwriter.Writer) { showJob(tw, &j) })
		}
		select {
		case <-cmd.Context().Done():
			return cmd.Context().Err()
		case <-time.After(time.Second):
		}
	}
}

func downloadFile(cmd *cobra.Command, c *Client, id, out string, force bool) error {
	resp, err := c.Stream(cmd.Context(), "/api/v1/files/"+url.PathEscape(id), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == "" {
		// Named by the manager's file ID, never by the name an agent gave:
		// a compromised agent must not choose which file is written here.
		out = "yagura-" + id + ".zip"
	}
	if _, err := os.Lstat(out); err == nil && !force {
		return fmt.Errorf("%s exists; choose another name with -O or pass --force to replace it", out)
	}
	want := resp.Header.Get("X-Checksum-SHA256")
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	bar := progressbar.NewOptions64(resp.ContentLength, progressbar.OptionSetWriter(cmd.ErrOrStderr()), progressbar.OptionShowBytes(true), progressbar.OptionSetDescription("downloading"))
	if _, err := io.Copy(io.MultiWriter(tmp, h, bar), resp.Body); err != nil {
		tmp.Close()
		return fmt.Errorf("download %s: %w", id, err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	got := hex.EncodeToString(h.Sum(nil))
	if want != "" && got != want {
		return fmt.Errorf("download %s: SHA-256 %s does not match the manager's %s", id, got, want)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "\n%s (%d bytes, SHA-256 %s verified)\n", out, resp.ContentLength, got)
	return nil
}
