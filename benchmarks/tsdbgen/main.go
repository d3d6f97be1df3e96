// tsdbgen writes a TSDB of synthetic modelmon series straight into Prometheus blocks, for
// benchmarks/bench_rules.py: M models x F numeric features x 14 bins x I instances,
// scraped every 15 s, steady traffic (bin counters grow by Poisson draws around the
// reference shares), with the metric contract's labels and the reference gauges.
//
//	go build -o /tmp/tsdbgen . && /tmp/tsdbgen -out DIR -models 10
//
// Blocks are 2 h long and aligned, as Prometheus cuts them; the last one ends at the
// current time (the program catches up with the clock before it exits), so a Prometheus
// started on DIR right after evaluates its rules on data that ends "now".
//
// -big-history limits the history of the per-feature families (bins, value summaries,
// reference gauges); the rest keeps -history. -recorded also writes, at their groups' steps over
// -history, the short-window series the rule files record and read back over long
// windows (their names must match prometheus/rules; bench_rules.py checks it), holding
// their steady values: only their number and spacing matter for the cost. -steady makes every
// counter grow by exactly its mean each scrape (no Poisson draws): constant rates.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"math/rand"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
)

const blockMs = int64(2 * time.Hour / time.Millisecond)

type series struct {
	lbls    labels.Labels
	ref     storage.SeriesRef
	value   float64
	mean    float64 // expected increase per scrape (counters); 0 = gauge
	gauge   bool
	start   int64 // first timestamp (ms)
	offs    int64 // scrape offset within the interval (ms)
	every   int64 // ms between samples
	poisson bool
}

var rng = rand.New(rand.NewSource(7))

func poisson(mean float64) float64 {
	if mean <= 0 {
		return 0
	}
	if mean > 30 {
		v := math.Round(mean + math.Sqrt(mean)*rng.NormFloat64())
		return math.Max(v, 0)
	}
	l, k, p := math.Exp(-mean), 0.0, 1.0
	for {
		p *= rng.Float64()
		if p <= l {
			return k
		}
		k++
	}
}

func main() {
	out := flag.String("out", "", "TSDB directory to create")
	models := flag.Int("models", 10, "models")
	features := flag.Int("features", 40, "numeric features per model")
	instances := flag.Int("instances", 4, "instances (replicas) per model")
	rows := flag.Float64("rows", 5, "rows scored per second per instance")
	scrape := flag.Duration("scrape", 15*time.Second, "scrape interval")
	history := flag.Duration("history", 26*time.Hour, "history of every series")
	bigHistory := flag.Duration("big-history", 0, "history of the per-feature families (default -history)")
	recorded := flag.Bool("recorded", false, "also write the recorded short-window series at their groups' steps")
	steady := flag.Bool("steady", false, "counters grow by exactly their mean every scrape (no Poisson draws)")
	serve := flag.String("serve", "", "then serve the series' continuation on this address (/metrics?target=<instance>)")
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "tsdbgen: -out is required")
		os.Exit(2)
	}
	if *bigHistory == 0 {
		*bigHistory = *history
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	step := scrape.Milliseconds()
	end := time.Now().UnixMilli()
	start := end - history.Milliseconds()
	bigStart := end - bigHistory.Milliseconds()

	bins := []string{}
	for b := 0; b < 10; b++ {
		bins = append(bins, fmt.Sprintf("%02d", b))
	}
	bins = append(bins, "__below__", "__above__", "__missing__", "__invalid__")
	share := func(feature, b int) float64 {
		switch {
		case b < 10:
			// regular bins: 0.97 split unevenly, a different shape per feature
			w := 1 + 0.5*math.Sin(float64(feature*7+b))
			return 0.97 * w / 10
		case bins[b] == "__missing__":
			return 0.02
		case bins[b] == "__invalid__":
			return 0
		}
		return 0.005
	}
	// normalise the regular shares per feature to 0.97
	norm := make([]float64, *features+1)
	for f := 0; f <= *features; f++ {
		s := 0.0
		for b := 0; b < 10; b++ {
			s += share(f, b)
		}
		norm[f] = 0.97 / s
	}
	ref := func(f, b int) float64 {
		if b < 10 {
			return share(f, b) * norm[f]
		}
		return share(f, b)
	}

	var all []*series
	add := func(s *series, begin int64) {
		s.start = begin
		if s.every == 0 {
			s.every = step
		}
		all = append(all, s)
	}
	perScrape := *rows * scrape.Seconds()
	for m := 0; m < *models; m++ {
		model := fmt.Sprintf("model-%03d", m)
		for i := 0; i < *instances; i++ {
			inst := fmt.Sprintf("%s-%d:8000", model, i)
			offs := int64(rng.Intn(int(step)))
			base := []string{"job", "modelmon", "instance", inst, "model", model, "version", "1"}
			mk := func(name string, extra ...string) labels.Labels {
				kv := append(append([]string{"__name__", name}, base...), extra...)
				return labels.FromStrings(kv...)
			}
			counter := func(begin int64, mean float64, poisson bool, name string, extra ...string) {
				poisson = poisson && !*steady
				add(&series{lbls: mk(name, extra...), mean: mean, offs: offs, poisson: poisson, value: mean * 1000}, begin)
			}
			gauge := func(begin int64, v float64, name string, extra ...string) {
				add(&series{lbls: mk(name, extra...), value: v, gauge: true, offs: offs}, begin)
			}
			for f := 0; f < *features; f++ {
				feature := fmt.Sprintf("f%02d", f)
				for b, bin := range bins {
					counter(bigStart, perScrape*ref(f, b), true, "modelmon_feature_bin_total", "feature", feature, "bin", bin)
					gauge(bigStart, ref(f, b), "modelmon_reference_bin_ratio", "feature", feature, "bin", bin)
				}
				// values ~ N(mu, sd), the training distribution: per value, E[X; X >= 0] summed
				// by sign="positive" and E[-X; X < 0] by sign="negative", so the live mean is mu
				mu, sd, p, pos, neg := normal(f)
				valid := perScrape * 0.975
				counter(bigStart, valid*p, true, "modelmon_feature_value_count", "feature", feature, "sign", "positive")
				counter(bigStart, valid*(1-p), true, "modelmon_feature_value_count", "feature", feature, "sign", "negative")
				counter(bigStart, valid*pos, false, "modelmon_feature_value_sum", "feature", feature, "sign", "positive")
				counter(bigStart, valid*neg, false, "modelmon_feature_value_sum", "feature", feature, "sign", "negative")
				gauge(bigStart, mu, "modelmon_reference_mean", "feature", feature)
				gauge(bigStart, sd, "modelmon_reference_stddev", "feature", feature)
			}
			for b, bin := range bins {
				counter(start, perScrape*ref(*features, b), true, "modelmon_prediction_bin_total", "output", "score", "bin", bin)
				gauge(start, ref(*features, b), "modelmon_reference_prediction_bin_ratio", "output", "score", "bin", bin)
			}
			counter(start, perScrape*0.6, true, "modelmon_prediction_value_count", "output", "score", "sign", "positive")
			counter(start, perScrape*0.4, true, "modelmon_prediction_value_count", "output", "score", "sign", "negative")
			counter(start, perScrape*0.6*3, false, "modelmon_prediction_value_sum", "output", "score", "sign", "positive")
			counter(start, perScrape*0.4*2, false, "modelmon_prediction_value_sum", "output", "score", "sign", "negative")
			gauge(start, 1, "modelmon_reference_prediction_mean", "output", "score")
			gauge(start, 3, "modelmon_reference_prediction_stddev", "output", "score")
			counter(start, perScrape, true, "modelmon_predictions_total")
			calls := perScrape / 5
			cum := 0.0
			for _, le := range []string{"0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "+Inf"} {
				switch le {
				case "0.005", "0.01":
					cum += 0.05
				case "0.025", "0.05":
					cum += 0.2
				case "0.1":
					cum += 0.3
				case "0.25":
					cum += 0.15
				case "0.5":
					cum += 0.05
				}
				counter(start, calls*math.Min(cum, 1), false, "modelmon_prediction_duration_seconds_bucket", "le", le)
			}
			counter(start, calls, false, "modelmon_prediction_duration_seconds_count")
			counter(start, calls*0.06, false, "modelmon_prediction_duration_seconds_sum")
			gauge(start, 1, "modelmon_model_info", "reference", "abc123")
			gauge(start, float64(end/1000-10*86400), "modelmon_model_trained_timestamp_seconds")
			gauge(start, float64(start/1000), "modelmon_model_loaded_timestamp_seconds")
			counter(start, perScrape*0.1, true, "modelmon_outcomes_total")
			counter(start, perScrape*0.09, true, "modelmon_outcomes_correct_total")
			gauge(start, 0.9, "modelmon_reference_score", "metric", "accuracy")
			// estimated quality (estimated.rules.yml): rows with probabilities, expected correct
			// rows and their variance, a binary model's expected confusion
			counter(start, perScrape, true, "modelmon_estimated_total")
			counter(start, perScrape*0.88, false, "modelmon_estimated_correct_total")
			counter(start, perScrape*0.09, false, "modelmon_estimated_correct_variance_total")
			counter(start, perScrape*0.05, false, "modelmon_estimated_positive_variance_total")
			for c, cell := range []string{"tp", "fp", "fn", "tn"} {
				counter(start, perScrape*[]float64{0.3, 0.05, 0.07, 0.58}[c], false, "modelmon_estimated_confusion_total", "cell", cell)
			}
			inst0 := []string{"__name__", "", "job", "modelmon", "instance", inst}
			plain := func(name string, extra ...string) labels.Labels {
				kv := append(append([]string{}, inst0...), extra...)
				kv[1] = name
				return labels.FromStrings(kv...)
			}
			add(&series{lbls: plain("up"), value: 1, gauge: true, offs: offs}, start)
			add(&series{lbls: plain("process_resident_memory_bytes"), value: 2e8, gauge: true, offs: offs}, start)
			add(&series{lbls: plain("modelmon_dependency_info", "package", "numpy", "version", "2.1.0"), value: 1, gauge: true, offs: offs}, start)
			add(&series{lbls: plain("modelmon_http_requests_total", "handler", "/predict", "method", "POST", "status", "200"), mean: perScrape / 5, offs: offs, value: 1000}, start)
		}
		if *recorded {
			// the rule files' 4m rates (summed over instances)
			n := float64(*instances)
			base := []string{"job", "modelmon", "model", model, "version", "1"}
			rec := func(name string, v float64, extra ...string) { // every 2 minutes, as the 1h groups
				kv := append(append([]string{"__name__", name}, base...), extra...)
				add(&series{lbls: labels.FromStrings(kv...), value: v, gauge: true, every: 120000, mean: -1}, start)
			}
			for f := 0; f < *features; f++ {
				feature := fmt.Sprintf("f%02d", f)
				for b, bin := range bins {
					rec("model_feature_bin:modelmon_feature_bin:rate4m", n**rows*ref(f, b), "feature", feature, "bin", bin)
				}
				_, _, p, pos, neg := normal(f)
				valid := n * *rows * 0.975
				rec("model_feature:modelmon_feature_value_count:rate4m", valid*p, "feature", feature, "sign", "positive")
				rec("model_feature:modelmon_feature_value_count:rate4m", valid*(1-p), "feature", feature, "sign", "negative")
				rec("model_feature:modelmon_feature_value_sum:rate4m", valid*pos, "feature", feature, "sign", "positive")
				rec("model_feature:modelmon_feature_value_sum:rate4m", valid*neg, "feature", feature, "sign", "negative")
			}
			for b, bin := range bins {
				rec("model_output_bin:modelmon_prediction_bin:rate4m", n**rows*ref(*features, b), "output", "score", "bin", bin)
			}
			// as the served predictions: 60% >= 0 averaging 3, 40% < 0 averaging -2 (mean 1)
			rec("model_output:modelmon_prediction_value_count:rate4m", n**rows*0.6, "output", "score", "sign", "positive")
			rec("model_output:modelmon_prediction_value_count:rate4m", n**rows*0.4, "output", "score", "sign", "negative")
			rec("model_output:modelmon_prediction_value_sum:rate4m", n**rows*0.6*3, "output", "score", "sign", "positive")
			rec("model_output:modelmon_prediction_value_sum:rate4m", n**rows*0.4*2, "output", "score", "sign", "negative")
		}
	}
	fmt.Printf("series %d\n", len(all))

	ctx := context.Background()
	var samples int64
	t0 := time.Now()
	write := func(lo, hi int64) { // samples with lo <= t < hi, as one block
		// a head twice the block long: it takes samples down to maxt - chunk range / 2, so
		// one series after the other, each over the whole block
		w, err := tsdb.NewBlockWriter(logger, *out, 2*blockMs)
		check(err)
		app := w.Appender(ctx)
		n := 0
		for _, s := range all {
			first := lo - ((lo-s.offs)%s.every+s.every)%s.every // first t >= lo on the series' grid
			if first < lo {
				first += s.every
			}
			for t := first; t < hi; t += s.every {
				if t < s.start {
					continue
				}
				if !s.gauge {
					if s.poisson {
						s.value += poisson(s.mean)
					} else {
						s.value += s.mean
					}
				}
				ref, err := app.Append(s.ref, s.lbls, t, s.value)
				check(err)
				s.ref = ref
				samples++
				n++
				if n >= 2_000_000 {
					check(app.Commit())
					app = w.Appender(ctx)
					n = 0
				}
			}
			s.ref = 0 // refs belong to this block's head
		}
		check(app.Commit())
		_, err = w.Flush(ctx)
		check(err)
		check(w.Close())
		fmt.Printf("block %s .. %s: %d samples so far, %.0f s\n", time.UnixMilli(lo).UTC().Format("01-02 15:04"),
			time.UnixMilli(hi).UTC().Format("15:04:05"), samples, time.Since(t0).Seconds())
	}
	lo := start
	for lo < end {
		hi := (lo/blockMs + 1) * blockMs
		if hi > end {
			hi = end
		}
		write(lo, hi)
		lo = hi
	}
	// catch up with the clock: the data ends within one scrape of now
	for {
		now := time.Now().UnixMilli()
		if now-lo < step {
			break
		}
		write(lo, now)
		lo = now
	}
	fmt.Printf("samples %d\nend_ms %d\n", samples, lo)
	if *serve != "" {
		serveContinuation(*serve, all, lo, step)
	}
}

// serveContinuation answers scrapes of each instance with its series (recorded ones
// aside), counters advanced by draws for the time since the data's end or the last scrape,
// so the history runs on without a gap. Prometheus adds job and instance (relabelled from
// the target parameter).
func serveContinuation(addr string, all []*series, end, step int64) {
	byInstance := map[string][]*series{}
	for _, s := range all {
		if s.mean == -1 || s.lbls.Get("__name__") == "up" { // recorded, or made by Prometheus
			continue
		}
		inst := s.lbls.Get("instance")
		byInstance[inst] = append(byInstance[inst], s)
	}
	last := map[string]int64{}
	var mu sync.Mutex
	http.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		inst := r.URL.Query().Get("target")
		mu.Lock()
		defer mu.Unlock()
		list, ok := byInstance[inst]
		if !ok {
			http.NotFound(w, r)
			return
		}
		now := time.Now().UnixMilli()
		from, seen := last[inst]
		if !seen {
			from = end
		}
		last[inst] = now
		steps := float64(now-from) / float64(step)
		var b strings.Builder
		for _, s := range list {
			if !s.gauge && steps > 0 {
				if s.poisson {
					s.value += poisson(s.mean * steps)
				} else {
					s.value += s.mean * steps
				}
			}
			b.WriteString(s.lbls.Get("__name__"))
			first := true
			s.lbls.Range(func(l labels.Label) {
				if l.Name == "__name__" || l.Name == "job" || l.Name == "instance" {
					return
				}
				if first {
					b.WriteByte('{')
					first = false
				} else {
					b.WriteByte(',')
				}
				b.WriteString(l.Name)
				b.WriteString("=")
				b.WriteString(strconv.Quote(l.Value))
			})
			if !first {
				b.WriteByte('}')
			}
			b.WriteByte(' ')
			b.WriteString(strconv.FormatFloat(s.value, 'g', -1, 64))
			b.WriteByte('\n')
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = w.Write([]byte(b.String()))
	})
	ln, err := net.Listen("tcp", addr)
	check(err)
	fmt.Printf("listening %s\n", ln.Addr())
	os.Stdout.Sync()
	check(http.Serve(ln, nil))
}

// normal is feature f's value distribution N(mu, sd), the reference's: the share of values
// >= 0, and per value the mean of X 1(X >= 0) and of -X 1(X < 0) (truncated normal moments).
func normal(f int) (mu, sd, p, pos, neg float64) {
	mu, sd = float64(f-20), 5.0
	p = 0.5 * math.Erfc(-mu/(sd*math.Sqrt2))
	phi := math.Exp(-mu*mu/(2*sd*sd)) / math.Sqrt(2*math.Pi)
	return mu, sd, p, mu*p + sd*phi, -mu*(1-p) + sd*phi
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "tsdbgen:", err)
		os.Exit(1)
	}
}
